"""Tests of icetools.scoring: SIC units and the AI4Arctic challenge's scores."""
