"""Subscriptions and notifications: which changes concern whom (``registry``), keeping subscriptions
(``subscriptions``), and delivering what is owed, at least once and in order (``notifier``,
``delivery``)."""
