"""``flipseg train backbone``: flipseg's own breast-ultrasound encoder (networks/backbone.py)."""
