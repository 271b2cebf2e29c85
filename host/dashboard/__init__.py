"""`host serve`: the dashboard's HTTP server (serve.py) and its pages, server-rendered HTML over the run
store, no JavaScript, every stored text escaped.

Rule: dashboard/ may import run/ and every wing below it; never cli/ (the cli command starts it).
"""
