"""A mule that idles until it is told to stop."""
import time

while True:
    time.sleep(1)
