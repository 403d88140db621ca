"""thinkctl.eval"""
