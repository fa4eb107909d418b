"""Fault suite: a gateway cluster the suite owns, nemeses, a recorder of acks and a checker.

``python -m loadtest.faults --tier ci`` (see loadtest/README.md "Fault suite").
"""
