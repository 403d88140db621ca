"""thinkctl.calibration"""
