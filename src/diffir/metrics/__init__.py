"""diffir.metrics"""
