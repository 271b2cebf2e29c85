"""Reports of one stored run: self-contained HTML, Markdown for a PR comment, CSV, and the JSON document.

host/report/formats.py picks the format and writes the file. The report wing renders what analysis/ computed
and store/ keeps; it imports neither run/, dashboard/ nor cli/.
"""
