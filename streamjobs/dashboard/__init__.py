"""``streamjobs dashboard``: a server-rendered web app over the index (Starlette, Jinja2, uvicorn).

The web stack is imported in this package only (the ``dashboard`` extra). :mod:`.server` runs
it, :mod:`.app` assembles it, :mod:`.auth` guards it, :mod:`.pages` are its pages,
:mod:`.charts` draws inline SVG and :mod:`.live` reads what the index does not hold. Templates
and the stylesheet are packaged here: the browser fetches nothing from elsewhere.
"""
