"""Diagrams of the book's mechanisms, drawn by code so they are tested and regenerated.

One module per part of the book; each function returns a matplotlib Figure whose
colours read in light and dark mode (a transparent background, mid-tone strokes).
"""
