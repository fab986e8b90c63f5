"""The desktop: PySide6 views that observe the node's typed status snapshots and send intents; no IO.

What a view shows is computed by its view model, a Qt-free module of pure functions over
`core.status.StatusSnapshot` (mesh_model, models_model, model_table, text, agents, chat_text;
the list and its rule live in tests/test_layering.py), so the views stay thin.
"""
