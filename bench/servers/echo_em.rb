# Echo server on Ruby EventMachine, written the way EventMachine's users
# write it: a handler module whose receive_data calls send_data. EM.epoll and
# a large descriptor table are what EventMachine servers with many
# connections switch on; INT and TERM stop the reactor. Usage: ruby echo_em.rb PORT
require 'socket'
require 'eventmachine'

module Echo
  def post_init
    set_sock_opt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1)
  end

  def receive_data(data)
    send_data(data)
  end
end

port = Integer(ARGV[0] || '0')
abort 'usage: ruby echo_em.rb PORT (not 0)' if port.zero?
EM.epoll
EM.set_descriptor_table_size(Process.getrlimit(:NOFILE)[1])
EM.run do
  %w[INT TERM].each { |sig| Signal.trap(sig) { EM.stop } }
  EM.start_server('127.0.0.1', port, Echo)
  puts "ready server=em pid=#{Process.pid} port=#{port} backend=#{EM.library_type}"
  $stdout.flush
end
