"""Benchmarks, not tests: ``python bench/run.py`` compares the framework with the plain PyTorch
way, case by case, and writes the table (bench/run.py says what each case measures)."""
