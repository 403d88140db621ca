"""thinkctl.embedded"""
