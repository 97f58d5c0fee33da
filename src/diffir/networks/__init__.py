"""diffir.networks"""
