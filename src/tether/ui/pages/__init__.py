"""The dashboard's HTML pages, one module per page group: overview, needs a human, run,
swarm graph, night report and audit. Each renders a Jinja2 template whose ``live`` block
a page's script fetches again (header ``X-Tether-Part: live``) after every change the
server-sent events announce."""
