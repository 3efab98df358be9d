require_relative 'helper'

# TCP servers and clients on 127.0.0.1 through the unchanged Ruby layer.
class TestTcp < Test::Unit::TestCase
  include LibemTest

  module Collector
    def initialize(got, on_done = nil)
      @got = got
      @on_done = on_done
    end

    def receive_data(data)
      @got << data
    end

    def unbind(reason = nil)
      @on_done&.call(reason)
    end
  end

  def test_echo_round_trip_and_completed
    port = free_port
    got = +''
    completed = false
    client = Module.new do
      define_method(:connection_completed) { completed = true; send_data('ping') }
      define_method(:receive_data) { |d| got << d; close_connection if got == 'ping' }
      define_method(:unbind) { EM.stop }
    end
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port, client)
    end
    assert_true(completed)
    assert_equal('ping', got)
  end

  def test_accepted_connection_gets_post_init_and_block
    port = free_port
    accepted = []
    em do
      EM.start_server('127.0.0.1', port, EchoServer) { |c| accepted << c }
      EM.connect('127.0.0.1', port) { |c| EM.add_timer(0.1) { c.close_connection; EM.stop } }
    end
    assert_equal(1, accepted.size)
    assert_kind_of(EM::Connection, accepted.first)
  end

  def test_send_data_order
    port = free_port
    got = +''
    expected = (1..2000).map { |i| "#{i}," }.join
    em do
      EM.start_server('127.0.0.1', port, Collector, got, proc { EM.stop })
      EM.connect('127.0.0.1', port) do |c|
        (1..2000).each { |i| c.send_data("#{i},") }
        c.close_connection_after_writing
      end
    end
    assert_equal(expected, got)
  end

  def test_64_mib_integrity
    port = free_port
    size = 64 << 20
    chunk = Random.new(7).bytes(1 << 20)
    digest = Digest::SHA256.new
    received = 0
    sender_digest = Digest::SHA256.new
    sink = Module.new do
      define_method(:receive_data) { |d| digest << d; received += d.bytesize }
      define_method(:unbind) { EM.stop }
    end
    em(60) do
      EM.start_server('127.0.0.1', port, sink)
      EM.connect('127.0.0.1', port) do |c|
        64.times { |i| piece = chunk.byteslice(i * 7 % 1024, chunk.bytesize - i * 7 % 1024) + chunk.byteslice(0, i * 7 % 1024); sender_digest << piece; c.send_data(piece) }
        c.close_connection_after_writing
      end
    end
    assert_equal(size, received)
    assert_equal(sender_digest.hexdigest, digest.hexdigest)
  end

  def test_close_connection_from_post_init
    port = free_port
    reasons = []
    closer = Module.new do
      define_method(:post_init) { close_connection }
    end
    client = Module.new do
      define_method(:unbind) { |r = nil| reasons << r; EM.stop }
    end
    em do
      EM.start_server('127.0.0.1', port, closer)
      EM.connect('127.0.0.1', port, client)
    end
    assert_equal(1, reasons.size)
  end

  def test_close_connection_after_writing_from_post_init_delivers
    port = free_port
    got = +''
    greeter = Module.new do
      define_method(:post_init) { send_data('bye now'); close_connection_after_writing }
    end
    em do
      EM.start_server('127.0.0.1', port, greeter)
      EM.connect('127.0.0.1', port, Collector, got, proc { EM.stop })
    end
    assert_equal('bye now', got)
  end

  def test_close_from_receive_data_drops_or_writes
    port = free_port
    got = +''
    server = Module.new do
      define_method(:receive_data) { |_d| send_data('answer'); close_connection_after_writing }
    end
    em do
      EM.start_server('127.0.0.1', port, server)
      EM.connect('127.0.0.1', port, Collector, got, proc { EM.stop }) { |c| c.send_data('q') }
    end
    assert_equal('answer', got)
  end

  def test_close_at_once_from_receive_data_stops_delivery
    port = free_port
    calls = 0
    reason = :none
    server = Module.new do
      define_method(:receive_data) { |_d| calls += 1; close_connection }
      define_method(:unbind) { |r = nil| reason = r; EM.add_timer(0.1) { EM.stop } }
    end
    em do
      EM.start_server('127.0.0.1', port, server)
      EM.connect('127.0.0.1', port) { |c| c.send_data('a'); EM.add_timer(0.02) { c.send_data('b') } }
    end
    assert_equal(1, calls)
    assert_nil(reason)
  end

  def test_close_after_writing_from_connection_completed
    port = free_port
    got = +''
    client = Module.new do
      define_method(:connection_completed) { send_data('last words'); close_connection_after_writing }
    end
    em do
      EM.start_server('127.0.0.1', port, Collector, got, proc { EM.stop })
      EM.connect('127.0.0.1', port, client)
    end
    assert_equal('last words', got)
  end

  def test_close_from_connection_completed
    port = free_port
    unbound = 0
    client = Module.new do
      define_method(:connection_completed) { close_connection }
      define_method(:unbind) { unbound += 1; EM.add_timer(0.05) { EM.stop } }
    end
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port, client)
    end
    assert_equal(1, unbound)
  end

  def test_close_from_unbind_is_harmless
    port = free_port
    unbound = 0
    client = Module.new do
      define_method(:connection_completed) { close_connection }
      define_method(:unbind) { unbound += 1; close_connection; close_connection_after_writing; EM.add_timer(0.05) { EM.stop } }
    end
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port, client)
    end
    assert_equal(1, unbound)
  end

  def test_data_queued_before_peer_eof_is_still_sent
    port = free_port
    got = +''
    # The server answers and the client has already half-closed: libem
    # writes the answer before closing (stock drops it).
    server = Module.new do
      define_method(:receive_data) { |d| EM.next_tick { send_data(d.upcase) } }
    end
    em do
      EM.start_server('127.0.0.1', port, server)
      Thread.new do
        s = TCPSocket.new('127.0.0.1', port)
        s.write('hello')
        sleep 0.05
        s.close_write
        got << s.read.to_s
        s.close
        EM.schedule { EM.stop }
      end
    end
    assert_equal('HELLO', got)
  end

  def test_unbind_reason_connection_refused
    reason = :none
    client = Module.new { define_method(:unbind) { |r = nil| reason = r; EM.stop } }
    em { EM.connect('127.0.0.1', free_port, client) }
    assert_equal(Errno::ECONNREFUSED, reason)
  end

  def test_error_status_and_clean_unbind_reason_nil
    port = free_port
    reason = :none
    client = Module.new do
      define_method(:connection_completed) { EM.add_timer(0.05) { close_connection } }
      define_method(:unbind) { |r = nil| reason = r; EM.stop }
    end
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      c = EM.connect('127.0.0.1', port, client)
      assert_false(c.error?)
    end
    assert_nil(reason)
  end

  def test_bad_address_raises_connection_error
    em do
      assert_raise(EM::ConnectionError) { EM.connect('', 80) }
      assert_raise(EM::ConnectionError) { EM.connect('127.0.0.1', 0) }
      EM.stop
    end
  end

  def test_peername_and_sockname
    port = free_port
    peer = sock = nil
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port) do |c|
        def c.connection_completed
          @done.call(get_peername, get_sockname)
        end
        c.instance_variable_set(:@done, proc { |p, s| peer = p; sock = s; EM.stop })
      end
    end
    assert_equal([port, '127.0.0.1'], Socket.unpack_sockaddr_in(peer))
    assert_equal('127.0.0.1', Socket.unpack_sockaddr_in(sock)[1])
  end

  def test_bind_connect
    port = free_port
    local = free_port
    sock = nil
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      c = EM.bind_connect('127.0.0.1', local, '127.0.0.1', port)
      def c.connection_completed
        EM.instance_variable_set(:@libem_test_sock, get_sockname)
        EM.stop
      end
    end
    sock = EM.instance_variable_get(:@libem_test_sock)
    assert_equal([local, '127.0.0.1'], Socket.unpack_sockaddr_in(sock))
  ensure
    EM.remove_instance_variable(:@libem_test_sock) if EM.instance_variable_defined?(:@libem_test_sock)
  end

  def test_stop_server_refuses_later_connections
    port = free_port
    reason = :none
    em do
      s = EM.start_server('127.0.0.1', port, EchoServer)
      EM.stop_server(s)
      EM.add_timer(0.05) do
        EM.connect('127.0.0.1', port, Module.new { define_method(:unbind) { |r = nil| reason = r; EM.stop } })
      end
    end
    assert_equal(Errno::ECONNREFUSED, reason)
  end

  def test_server_on_busy_port_raises
    port = free_port
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      assert_raise(RuntimeError) { EM.start_server('127.0.0.1', port, EchoServer) }
      EM.stop
    end
  end

  def test_connection_count_and_close_scheduled
    port = free_port
    counts = []
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port) do |c|
        def c.connection_completed
          EM.add_timer(0.05) do
            @counts << EM.connection_count
            close_connection
            @counts << EM.num_close_scheduled
            EM.add_timer(0.05) { @counts << EM.connection_count << EM.num_close_scheduled; EM.stop }
          end
        end
        c.instance_variable_set(:@counts, counts)
      end
    end
    assert_equal([3, 1, 1, 0], counts) # the server counts, as in stock
  end

  def test_close_in_unbind_counts_until_unbind_returns
    counts = []
    client = Module.new do
      define_method(:unbind) do
        close_connection
        counts << EM.num_close_scheduled
        EM.next_tick { counts << EM.num_close_scheduled; EM.stop }
      end
    end
    em { EM.connect('127.0.0.1', free_port, client) }
    assert_equal([1, 0], counts)
  end

  def test_pause_and_resume
    port = free_port
    got = +''
    paused_during = nil
    em do
      srv = nil
      EM.start_server('127.0.0.1', port, Collector, got) { |c| srv = c; c.pause }
      EM.connect('127.0.0.1', port) do |c|
        c.send_data('while paused')
        EM.add_timer(0.1) do
          paused_during = got.dup
          assert_true(srv.paused?)
          srv.resume
          assert_false(srv.paused?)
          EM.add_timer(0.1) { EM.stop }
        end
      end
    end
    assert_equal('', paused_during)
    assert_equal('while paused', got)
  end

  def test_comm_inactivity_timeout
    port = free_port
    reason = :none
    elapsed = nil
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      t0 = monotonic
      c = EM.connect('127.0.0.1', port, Module.new { define_method(:unbind) { |r = nil| reason = r; elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0; EM.stop } })
      c.comm_inactivity_timeout = 0.2
      assert_in_delta(0.2, c.comm_inactivity_timeout, 0.001)
    end
    assert_equal(Errno::ETIMEDOUT, reason)
    assert_operator(elapsed, :>=, 0.19)
  end

  def test_pending_connect_timeout
    # A listener whose accept queue is full drops further SYNs, so a
    # connect to it stays pending.
    listener = Socket.new(:INET, :STREAM)
    listener.bind(Socket.sockaddr_in(0, '127.0.0.1'))
    listener.listen(0)
    port = listener.local_address.ip_port
    fillers = []
    3.times do
      s = Socket.new(:INET, :STREAM)
      begin
        s.connect_nonblock(Socket.sockaddr_in(port, '127.0.0.1'))
      rescue IO::WaitWritable, Errno::EINPROGRESS
      end
      fillers << s
    end
    sleep 0.1
    reason = :none
    em do
      c = EM.connect('127.0.0.1', port, Module.new { define_method(:unbind) { |r = nil| reason = r; EM.stop } })
      c.pending_connect_timeout = 0.3
      assert_in_delta(0.3, c.pending_connect_timeout, 0.001)
    end
    assert_equal(Errno::ETIMEDOUT, reason)
  ensure
    fillers&.each(&:close)
    listener&.close
  end

  def test_idle_time
    port = free_port
    idle = nil
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      c = EM.connect('127.0.0.1', port)
      EM.add_timer(0.2) { idle = c.get_idle_time; EM.stop }
    end
    assert_operator(idle, :>=, 0.1)
    assert_operator(idle, :<, 1.0)
  end

  def test_send_file_data_larger_than_stock_limit
    port = free_port
    data = Random.new(3).bytes(200_000) # stock refuses files over 32 KiB
    got = +''
    Dir.mktmpdir do |dir|
      path = File.join(dir, 'f')
      File.binwrite(path, data)
      sender = Module.new do
        define_method(:post_init) { send_file_data(path); close_connection_after_writing }
      end
      em do
        EM.start_server('127.0.0.1', port, sender)
        EM.connect('127.0.0.1', port, Collector, got, proc { EM.stop })
      end
    end
    assert_equal(data.bytesize, got.bytesize)
    assert_equal(data, got.b)
  end

  def test_send_file_data_missing_file_raises
    port = free_port
    err = nil
    sender = Module.new do
      define_method(:post_init) do
        begin
          send_file_data('/nonexistent/libem-test')
        rescue IOError => e
          err = e
        end
        close_connection
      end
    end
    em do
      EM.start_server('127.0.0.1', port, sender)
      EM.connect('127.0.0.1', port, Module.new { define_method(:unbind) { EM.stop } })
    end
    assert_kind_of(IOError, err)
  end

  def test_stream_file_data
    port = free_port
    data = Random.new(5).bytes(100_000)
    got = +''
    Dir.mktmpdir do |dir|
      path = File.join(dir, 'f')
      File.binwrite(path, data)
      sender = Module.new do
        define_method(:post_init) { stream_file_data(path).callback { close_connection_after_writing } }
      end
      em do
        EM.start_server('127.0.0.1', port, sender)
        EM.connect('127.0.0.1', port, Collector, got, proc { EM.stop })
      end
    end
    assert_equal(data, got.b)
  end

  def test_proxy
    backend_port = free_port
    front_port = free_port
    backend_got = +''
    proxied = nil
    target_unbound = false
    front = Module.new do
      define_method(:post_init) do
        @backend = EM.connect('127.0.0.1', backend_port, Collector, backend_got)
        proxy_incoming_to(@backend)
      end
      define_method(:proxy_target_unbound) { target_unbound = true }
      define_method(:unbind) { proxied = get_proxied_bytes }
    end
    em do
      EM.start_server('127.0.0.1', backend_port, Module.new { define_method(:receive_data) { |d| (@all ||= +'') << d; close_connection if @all.size >= 11 } })
      EM.start_server('127.0.0.1', front_port, front)
      EM.connect('127.0.0.1', front_port) do |c|
        c.send_data('hello proxy')
        EM.add_timer(0.3) { c.close_connection; EM.add_timer(0.1) { EM.stop } }
      end
    end
    assert_true(target_unbound)
    assert_equal(11, proxied)
  end

  # After disable_proxy the bytes come to receive_data again.
  def test_stop_proxy
    backend_port = free_port
    front_port = free_port
    backend_got = +''
    front_got = +''
    front = Module.new do
      define_method(:post_init) do
        @backend = EM.connect('127.0.0.1', backend_port)
        proxy_incoming_to(@backend)
      end
      define_method(:receive_data) { |d| front_got << d }
    end
    em do
      EM.start_server('127.0.0.1', backend_port, Collector, backend_got)
      fronts = []
      EM.start_server('127.0.0.1', front_port, front) { |c| fronts << c }
      EM.connect('127.0.0.1', front_port) do |c|
        c.send_data('to backend')
        EM.add_timer(0.2) do
          fronts.first.stop_proxying
          c.send_data('to front')
          EM.add_timer(0.2) { EM.stop }
        end
      end
    end
    assert_equal('to backend', backend_got)
    assert_equal('to front', front_got)
  end

  def test_exception_in_receive_data_propagates
    port = free_port
    bad = Module.new { define_method(:receive_data) { |_d| raise IOError, 'in receive_data' } }
    err = assert_raise(IOError) do
      em do
        EM.start_server('127.0.0.1', port, bad)
        EM.connect('127.0.0.1', port) { |c| c.send_data('x') }
      end
    end
    assert_equal('in receive_data', err.message)
    em { EM.stop } # the port and the reactor were released
  end

  def test_exception_in_unbind_propagates
    port = free_port
    bad = Module.new { define_method(:unbind) { raise 'in unbind' } }
    err = assert_raise(RuntimeError) do
      em do
        EM.start_server('127.0.0.1', port, EchoServer)
        EM.connect('127.0.0.1', port, bad) { |c| EM.add_timer(0.05) { c.close_connection } }
      end
    end
    assert_equal('in unbind', err.message)
  end

  def test_keepalive_and_sock_opt
    port = free_port
    opt = nil
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port) do |c|
        def c.connection_completed
          enable_keepalive(30, 5, 3)
          on = get_sock_opt(Socket::SOL_SOCKET, Socket::SO_KEEPALIVE).unpack1('i')
          disable_keepalive
          @got.call([on, get_sock_opt(Socket::SOL_SOCKET, Socket::SO_KEEPALIVE).unpack1('i')])
        end
        c.instance_variable_set(:@got, proc { |v| opt = v; EM.stop })
      end
    end
    assert_equal([1, 0], opt)
  end

  def test_outbound_data_size
    port = free_port
    sizes = []
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      c = EM.connect('127.0.0.1', port)
      c.send_data('x' * 1000)
      sizes << c.get_outbound_data_size
      EM.add_timer(0.1) { sizes << c.get_outbound_data_size; EM.stop }
    end
    assert_equal([1000, 0], sizes)
  end

  def test_attach_server
    srv = TCPServer.new('127.0.0.1', 0)
    srv.autoclose = false # libem closes the listening fd when the server goes
    port = srv.addr[1]
    got = +''
    em do
      EM.attach_server(srv, EchoServer)
      EM.connect('127.0.0.1', port, Collector, got, proc { EM.stop }) do |c|
        c.send_data('attached')
        EM.add_timer(0.1) { c.close_connection }
      end
    end
    assert_equal('attached', got)
  end

  def test_set_sock_opt_and_file_descriptor
    port = free_port
    vals = []
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port) do |c|
        def c.connection_completed
          set_sock_opt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, true)
          @vals << get_sock_opt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY).unpack1('i')
          @vals << EM.get_file_descriptor(signature)
          EM.stop
        end
        c.instance_variable_set(:@vals, vals)
      end
    end
    assert_equal(1, vals[0])
    assert_operator(vals[1], :>, 2)
  end

  # Stock answers get_sockname for a server too: how a program finds the
  # port it was given with port 0.
  def test_server_sockname
    tcp = unix = nil
    Dir.mktmpdir do |dir|
      path = File.join(dir, 's')
      em do
        tcp = EM.get_sockname(EM.start_server('127.0.0.1', 0, EchoServer))
        unix = EM.get_sockname(EM.start_unix_domain_server(path, EchoServer))
        EM.stop
      end
      assert_equal(path, Socket.unpack_sockaddr_un(unix))
    end
    port, ip = Socket.unpack_sockaddr_in(tcp)
    assert_equal('127.0.0.1', ip)
    assert_operator(port, :>, 0)
  end
end
