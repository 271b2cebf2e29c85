"""`host serve`'s pages: server-rendered HTML over the run store, no JavaScript, every stored text escaped."""
