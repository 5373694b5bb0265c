"""Widgets the screens share: forms, the screens line, the category tree, image previews.
"""
