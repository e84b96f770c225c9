"""Helpers shared by tests of several levels and modules (fakes, builders, parsers); no tests here."""
