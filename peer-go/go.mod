module github.com/peerproxy/peerproxy/peer-go

go 1.26

require github.com/gorilla/websocket v1.5.3
