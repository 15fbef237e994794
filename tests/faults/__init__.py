"""Fault tests of the storage engine: kills, torn tails, bit flips, lost indexes,
compaction crashes."""
