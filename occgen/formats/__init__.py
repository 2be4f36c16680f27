"""Readers for other tools' face dataset formats (insightface's RecordIO training sets and .bin verification sets),
written from the formats' specifications: no MXNet, nothing unpickled that could run code."""
