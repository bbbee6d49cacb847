"""The plugin's RecBole models."""
