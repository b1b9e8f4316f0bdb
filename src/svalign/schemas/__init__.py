"""Declarations of the Parquet tables, one module per stage: :mod:`~svalign.schemas.toy`,
:mod:`~svalign.schemas.real` (weights, SVD, SAD), :mod:`~svalign.schemas.sae`, :mod:`~svalign.schemas.dynamics`,
:mod:`~svalign.schemas.explorer` and :mod:`~svalign.schemas.results`. Import them through :mod:`svalign.tables`,
the registry. This file imports nothing.
"""
