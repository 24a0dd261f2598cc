"""Static files of the web page (a package only so that wheels carry them)."""
