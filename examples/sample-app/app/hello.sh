#!/bin/sh
# The sample application: says hello and where it was built.
echo "hello from the blacktree sample app"
cat /app/build-info
