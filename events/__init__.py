"""genqueue's event model: the catalogue, the codec, the stores, the folds and replay.

Everything that happened is an event on one Redis stream per namespace; every piece of
state is a fold over those events. This package imports neither Ray nor HTTP code.
"""
