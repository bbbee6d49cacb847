"""Data: the plugin's sequential dataset and the item-id -> text table."""
from recbole_trsr.data.dataset import (HISTORY_POSITION_FIELD, TRSRSequentialDataset, UserHistories, create_dataset,
                                      training_positions)
from recbole_trsr.data.item_text import ItemTextTable

__all__ = ["HISTORY_POSITION_FIELD", "ItemTextTable", "TRSRSequentialDataset", "UserHistories", "create_dataset",
           "training_positions"]
