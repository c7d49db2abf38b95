"""Prefect flows for s2r: thin compositions of ``s2r_data`` / ``s2r_train`` calls.

* :mod:`flows.build_dataset` — flow ``build-dataset``: city name → verified Zarr dataset.
* :mod:`flows.train` — flow ``train``: dataset → checkpoints (GPU work pools).
* :mod:`flows.demo` — ``python -m flows.demo``: the whole pipeline offline on the sample city.

Only this package imports prefect; the libraries stay plain Python.
"""
