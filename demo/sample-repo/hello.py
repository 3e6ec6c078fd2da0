print("Hello from an image built by repo2docker!")
