"""The test kit: one of each thing many tests need (see CONTRIBUTING.md, "Test kits").

- ``wait``: ``wait_until`` (poll with a deadline and a message), ``hold_for`` (a real duration),
  ``wait_for_file`` (a started process's ready file);
- ``ca``: the one test CA (TLS certificates through trustme, identity certificates for chosen keys);
- ``ftmock``: the reference server as a process (the fixtures are in ``tests/conftest.py``), and
  ``finished_job`` for its check-in jobs;
- ``closing``: the fixture that closes what a test opened, whatever its outcome;
- ``orgs``: an org of the test's own (the ``org`` fixture, ``new_org``), its users and pools;
- ``guest``: the one guest builder (``make_guest``) and ``Guest``, with the ``guest``, ``any_guest``
  and ``guests`` fixtures;
- ``lease``: lease guests and the server's lease log checked for overlapping holders;
- ``etcd``, ``sanlock``: the real lease backends (a 3-member etcd cluster, two sanlock daemons);
- ``rhsmhost``: a host registered with subscription-manager under a test root; ``mountns``: the same
  files at their real paths, in a private mount namespace (root); ``rhsmprobe``: python-rhsm's own
  readers, run inside one;
- ``lease_sites``: two instances of one FT VM on each backend, for the fault scenarios every
  backend faces (``tests/ftagent/test_lease_faults.py``).
"""
