"""The Ray engine of ``acsearch index --engine ray``: decoding and encoding on a Ray cluster, the
commit on the driver (see :mod:`.engine` for the stages and the commit protocol).

Nothing here imports Ray at import time: ``ray`` is an optional extra
(``pip install "audioclip-search[ray]"``), loaded when the engine runs.
"""
