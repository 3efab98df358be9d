# An EventMachine echo server, unchanged from what runs on stock
# EventMachine: `ruby -I build/ruby ruby/examples/echo.rb [PORT]` runs it on
# libem's extension (make ruby-demo). Try it with `nc 127.0.0.1 8023`.
require 'eventmachine'

module EchoServer
  def post_init
    port, ip = Socket.unpack_sockaddr_in(get_peername)
    puts "connection from #{ip}:#{port}"
  end

  def receive_data(data)
    send_data(data)
    close_connection_after_writing if data.strip == 'quit'
  end

  def unbind(reason = nil)
    puts "closed#{reason ? " (#{reason})" : ''}"
  end
end

port = Integer(ARGV[0] || 8023)
EventMachine.run do
  trap('INT') { EventMachine.stop }
  trap('TERM') { EventMachine.stop }
  EventMachine.start_server('127.0.0.1', port, EchoServer)
  puts "echo server on 127.0.0.1:#{port} (libem #{EventMachine::LIBEM_VERSION}); Ctrl-C stops it"
end
