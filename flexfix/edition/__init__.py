"""The edition: results files, parameters, tables, figures and prose, the notebooks run and published.

:mod:`~flexfix.edition.results` writes and reads results with provenance; :mod:`~flexfix.edition.params` checks
what a notebook or a command line was given; :mod:`~flexfix.edition.tables`, :mod:`~flexfix.edition.plots` and
:mod:`~flexfix.edition.narrative` turn results into views, figures and sentences; :mod:`~flexfix.edition.glossary`
defines the words; :mod:`~flexfix.edition.run_notebooks` executes the notebooks, :mod:`~flexfix.edition.publish`
and :mod:`~flexfix.edition.book` make the published edition.
"""
