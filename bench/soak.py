"""Chaos soak (bench/run soak)."""


def run(cfg) -> dict:
    raise NotImplementedError
