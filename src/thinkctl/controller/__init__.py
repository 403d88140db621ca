"""thinkctl.controller"""
