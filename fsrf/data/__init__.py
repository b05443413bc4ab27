"""MMSA data loading (being implemented)."""
