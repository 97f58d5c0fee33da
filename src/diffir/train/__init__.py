"""diffir.train"""
