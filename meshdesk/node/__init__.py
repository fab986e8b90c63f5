"""The asyncio shell: drives core with real time and IO through small interfaces it defines."""
