"""The store's server-side scripts, as Lua files (read by ``recsys.store.redis_store``).

A package of its own so that the ``*.lua`` package data ships in the wheel and
``importlib.resources`` finds the files wherever the library is installed.
"""
