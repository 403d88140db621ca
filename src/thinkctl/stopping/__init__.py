"""thinkctl.stopping"""
