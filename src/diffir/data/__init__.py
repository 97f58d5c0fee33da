"""diffir.data"""
