"""The user's model: load .keras / .h5 / SavedModel and export it once; the one data layer."""
