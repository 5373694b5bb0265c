"""Factories and helpers the tests share (never import one test module from another).
"""
