"""thinkctl.traces"""
