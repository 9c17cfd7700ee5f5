"""The database: tables, the functions that stage reads and writes (callers commit), schema migrations."""
