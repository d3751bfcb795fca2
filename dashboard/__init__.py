"""hooklab's Streamlit dashboard (``make run``; never imported by :mod:`hooklab`).

* ``app.py`` — the ``st.navigation`` router and the shared sidebar.
* ``pages.py`` — the one page table (id, titles, icon, view file, URL path) and ``share_link``.
* ``state.py`` — cached resources (model + Lock), the store, the error boundary ``guard``.
* ``components/`` — shared controls: pickers, open/save/share a run, the Grad-CAM controls.
* ``views/`` — one file per page, layout only.

The view convention: every view file defines ``main()`` and ends with
``if __name__ == "__main__": main()``. Streamlit (the router, ``streamlit run`` or AppTest) runs
a page file as ``__main__``, so importing a view runs nothing. No view imports another view;
computation lives in :mod:`hooklab`, shared widgets in :mod:`dashboard.components`.
"""
