"""thinkctl.predictors"""
