"""Parts of ``bench/writer.py``: the physical floor (``floor``) and nginx serving the chunk files (``nginx``)."""
