"""``flip-vote``: the pixels on which at least two of three box-only masks agree (a composite
of registered methods: ``flip``, Flip + GrabCut, and the ``boxinst`` U-Net)."""
