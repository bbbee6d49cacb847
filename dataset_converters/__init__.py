"""Raw dataset downloads -> RecBole atomic files (``python -m dataset_converters.mind ...``)."""
