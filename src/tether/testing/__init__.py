"""Test helpers shipped with tether, for tether's own tests and for yours.

``tether.testing.openai_server.FakeChatServer`` is a real loopback HTTP server
that speaks the Chat Completions wire format, so model adapters are tested
over real sockets instead of patched clients.
"""
