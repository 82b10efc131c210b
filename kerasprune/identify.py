"""The original Keras-Prune spelling: ``kerasprune.identify.high_apoz``.

The same functions as :func:`kerasprune.high_apoz` and :func:`kerasprune.get_apoz`.
"""

from kerasprune.adapters.keras.apoz import get_apoz, high_apoz

__all__ = ["get_apoz", "high_apoz"]
