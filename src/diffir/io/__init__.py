"""diffir.io"""
